"""The protocol's error family, split by blame (as h11 splits Local/Remote).

`RemoteProtocolError` means bytes or messages from someone else are invalid: the node
drops them (and, in the gossip validator, penalises the peer). `LocalProtocolError`
means our own caller asked for something illegal. Every error names the field at fault
(a dotted path such as ``payload.budget``), a stable machine-readable ``code`` and a
human reason, so a CLI can print "payload.budget: must be > 0 (got -5)" and metrics can
count by code.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error raised by `swarm.protocol`."""

    code: str = "protocol_error"

    def __init__(self, field: str, reason: str, *, code: str | None = None) -> None:
        self.field = field
        self.reason = reason
        if code is not None:
            self.code = code
        super().__init__(f"{field}: {reason}")

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "reason": self.reason}


class LocalProtocolError(ProtocolError):
    """Our caller asked for something the protocol forbids (e.g. signing a bad payload)."""

    code = "local_error"


class RemoteProtocolError(ProtocolError):
    """Input from elsewhere is invalid; the message is dropped, the node carries on."""

    code = "invalid"


class DecodeError(RemoteProtocolError):
    """The bytes are not a well-formed, canonical, bounded DAG-CBOR document."""

    code = "decode"


class SchemaError(RemoteProtocolError):
    """A field is missing, unknown, of the wrong type, or out of range."""

    code = "schema"


class SignatureError(RemoteProtocolError):
    """The Ed25519 signature does not verify against the sender's key."""

    code = "bad_signature"


class SwarmMismatch(RemoteProtocolError):
    """The envelope belongs to another swarm (different genesis)."""

    code = "wrong_swarm"


class LamportReversal(RemoteProtocolError):
    """An envelope's Lamport time is not greater than that of something it references (P3)."""

    code = "lamport_reversal"


class LamportFuture(RemoteProtocolError):
    """An envelope's Lamport time is above the receiver's ceiling (protocol/lamport.py):
    it is refused for now, not held against the sender or a forwarder."""

    code = "lamport_future"


class LogFormatError(RemoteProtocolError):
    """An envelope log file is truncated or not in the log format."""

    code = "log_format"
