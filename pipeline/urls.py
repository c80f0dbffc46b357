"""URLs as they may be shown: without the ``user:password@`` a mirror or server URL can carry.

Every URL (or message quoting one) that is logged, tagged, recorded or put in an error goes
through :func:`redact`; credentials are only ever used, never written anywhere.
"""

from __future__ import annotations

import re

# scheme://userinfo@ ; the user-info ends at the last "@" before the path, query or fragment.
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` with the user-info of every URL in it removed (``https://u:p@h/x`` -> ``https://h/x``)."""
    return _USER_INFO.sub(r"\g<scheme>", text)
