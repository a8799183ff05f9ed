"""TLS (and mutual TLS) to Kafka, one place for every client: Faust, aiokafka producers and
consumers, the admin client. Strimzi's TLS listener authenticates the workers by the KafkaUser's
certificate (`user.crt` / `user.key`) and presents a server certificate signed by the cluster CA
(`ca.crt`); the production overlay mounts the three files and sets RADALIGN_KAFKA_SECURITY_PROTOCOL=SSL.
"""

from __future__ import annotations

import ssl
from typing import Any

from radalign.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """None for PLAINTEXT (the embedded broker); a verifying client context for SSL."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol != "SSL":
        raise ValueError(f"RADALIGN_KAFKA_SECURITY_PROTOCOL must be PLAINTEXT or SSL, not {settings.kafka_security_protocol!r}")
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    context = ssl_context(settings)
    return {"security_protocol": "SSL", "ssl_context": context} if context is not None else {}


def faust_credentials(settings: Settings) -> Any:
    """`broker_credentials` for faust.App (None: plaintext)."""
    context = ssl_context(settings)
    if context is None:
        return None
    import faust

    return faust.SSLCredentials(context)
