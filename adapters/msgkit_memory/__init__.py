"""In-memory msgkit backend (`memory://`): see `msgkit_memory.backend`."""

from msgkit_memory.backend import MemoryBackend
from msgkit_memory.hub import Faults, Hub, get_hub

__all__ = ["Faults", "Hub", "MemoryBackend", "get_hub"]
