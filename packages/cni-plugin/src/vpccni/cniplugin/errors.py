"""CNI errors: the spec's error codes and the error JSON a plugin prints on stdout.

Both sides use it: the shim prints a :class:`CNIError` as the spec's error object and ipamd's CNI endpoint
sends one back over the wire, so a code chosen in ipamd reaches the runtime unchanged.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class ErrorCode:
    """Error codes of the CNI spec (0-99 reserved), plus the Go library's 999 for internal errors.

    Plain ``int`` constants, not an ``IntEnum``: ``enum`` costs ~3 ms to import in a shim that lives ~7 ms.
    """

    INCOMPATIBLE_CNI_VERSION: Final = 1
    UNSUPPORTED_FIELD: Final = 2
    UNKNOWN_CONTAINER: Final = 3
    INVALID_ENVIRONMENT_VARIABLES: Final = 4
    IO_FAILURE: Final = 5
    DECODING_FAILURE: Final = 6
    INVALID_NETWORK_CONFIG: Final = 7
    TRY_AGAIN_LATER: Final = 11
    # STATUS: the plugin cannot serve ADD now (50), and existing pods may be affected as well (51).
    NOT_AVAILABLE: Final = 50
    NOT_AVAILABLE_LIMITED_CONNECTIVITY: Final = 51
    INTERNAL: Final = 999


class CNIError(Exception):
    """A failure the runtime sees as ``{"cniVersion", "code", "msg", "details"}`` on stdout and exit 1."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = int(code)
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}

    @classmethod
    def from_dict(cls, data: object) -> CNIError:
        """The error object as sent by ipamd; anything malformed becomes an internal error saying so."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("code"), int)
            and not isinstance(data.get("code"), bool)
            and isinstance(data.get("msg"), str)
        ):
            details = data.get("details")
            return cls(data["code"], data["msg"], details if isinstance(details, str) else "")
        return cls(ErrorCode.INTERNAL, f"ipamd sent a malformed error object: {str(data)[:200]}")

    def __repr__(self) -> str:
        return f"CNIError(code={self.code}, msg={self.msg!r}, details={self.details!r})"
