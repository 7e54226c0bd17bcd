"""RabbitMQ msgkit backend (`amqp://`, `amqps://`) on aio-pika: see `msgkit_rabbitmq.backend`."""

from msgkit_rabbitmq.backend import RabbitMQBackend

__all__ = ["RabbitMQBackend"]
