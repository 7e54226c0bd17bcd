"""AsyncAPI 3.0 contracts of msgkit services, read from their declarations.

`msgkit asyncapi module:attribute` writes one; `document(broker)` builds it in code.
"""

from msgkit.asyncapi.document import SPEC_VERSION, document
from msgkit.asyncapi.output import render

__all__ = ["SPEC_VERSION", "document", "render"]
