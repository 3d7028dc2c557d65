"""What may be read out of a MongoDB URI without showing its secrets: hosts, database, option names.

Split the way pymongo splits it (credentials before the last '@' of the host list, database after the
first '/', options after '?'). A URI whose credentials hold an unescaped '@', '/' or '?' cannot be
split safely: any split could show part of the password, so nothing is shown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

from pymongo.errors import ConfigurationError
from pymongo.uri_parser import split_options

DEFAULT_PORT = 27017
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._%-]+)(:\d{1,5})?$")


class _Parts(NamedTuple):
    scheme: str
    credentials: str  # "user:password" as written (percent-encoded), or ""
    hosts: str  # the host list as written
    tail: str  # "/db?options", "?options" or ""

    @property
    def query(self) -> str:
        return self.tail.partition("?")[2]


def _split(uri: str) -> _Parts | None:
    """The URI's parts, or None if they cannot be told apart safely."""
    scheme, separator, rest = uri.partition("://")
    if not separator or scheme not in ("mongodb", "mongodb+srv"):
        return None
    host_part = rest.partition("?")[0].partition("/")[0]
    tail = rest[len(host_part) :]
    if "@" in tail:
        return None  # an unescaped '/' or '?' in the credentials (or an '@' in an option value)
    credentials, _, hosts = host_part.rpartition("@")
    return _Parts(scheme, credentials, hosts, tail)


def _hosts_of(uri: str) -> tuple[bool, list[str]] | None:
    """(is_srv, ["host:port", ...]), or None when the URI cannot be shown safely."""
    split = _split(uri)
    if split is None:
        return None
    scheme, host_list = split.scheme, split.hosts
    hosts = [host for host in host_list.split(",") if host]
    if not hosts or not all(_HOST.match(host) for host in hosts):
        return None
    is_srv = scheme == "mongodb+srv"
    if not is_srv:
        hosts = [_with_port(host) for host in hosts]
    return is_srv, hosts


def _with_port(host: str) -> str:
    """host:port as pymongo connects; a unix socket (a percent-encoded path ending in .sock) as its path."""
    if host.lower().endswith(".sock"):
        return unquote(host)
    return host if _HOST.match(host).group(2) else f"{host}:{DEFAULT_PORT}"


def describe_mongo_target(uri: str | None, tm2_home: str | Path | None = None) -> str:
    """Where the store is, for messages: "HOST:PORT[,HOST:PORT]", the srv host, or the embedded store."""
    if uri is None:
        home = Path(tm2_home).expanduser().resolve() if tm2_home else Path("$TM2_HOME")
        return f"embedded store at {home / 'mongo'}"
    parsed = _hosts_of(uri)
    if parsed is None:
        return "a MongoDB URI that cannot be shown safely"
    return ",".join(parsed[1])


def redact_uri(uri: str | None) -> str | None:
    """The URI without secrets: credentials become `***`, option values (tokens, key passwords) are hidden."""
    if uri is None:
        return None
    if _hosts_of(uri) is None:
        return "<hidden>"
    scheme, _, rest = uri.partition("://")
    address, question, _ = rest.partition("?")
    _credentials, at, hosts_and_db = address.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{hosts_and_db}{'?<options hidden>' if question else ''}"


def database_in_uri(uri: str) -> str | None:
    """The database a URI names (`.../clinicdb?...`), or None (none named, or not safely split)."""
    split = _split(uri)
    if split is None:
        return None
    path = split.tail.partition("?")[0].removeprefix("/")
    # `/db.collection` names the database `db` (the form pymongo still accepts).
    return unquote(path).partition(".")[0] or None


def is_readable(uri: str) -> bool:
    """Whether hosts, database and options can be read without guessing: a MongoDB URI whose user
    name, password and option values percent-encode '@', '/' and '?'."""
    # An '@' in the credentials still leaves the host readable (it is shown), but pymongo refuses it.
    split = _split(uri)
    return split is not None and "@" not in split.credentials and _hosts_of(uri) is not None


def uri_options(uri: str) -> dict[str, str]:
    """The URI's options, lower-cased name -> value (`?w=1&retryWrites=false`); {} if none or unsplittable."""
    split = _split(uri)
    if split is None:
        return {}
    options = {}
    for pair in re.split(r"[&;]", split.query):
        name, _, value = pair.partition("=")
        if name:
            options[unquote(name).lower()] = unquote(value)
    return options


def option_problem(uri: str) -> str | None:
    """Why pymongo would refuse or drop one of the URI's options (an unknown name, a value it cannot
    read), or None. pymongo itself only warns and drops such an option, and the run then fails as
    something else ("cannot reach MongoDB"). Values are cut out: an option can carry a secret."""
    split = _split(uri)
    query = split.query if split else ""
    if not query:
        return None
    try:
        split_options(query, validate=True, warn=False)
    except (ConfigurationError, ValueError, TypeError) as error:
        message = str(error).removesuffix(" Refer to docstring.")
        for value in sorted(uri_options(uri).values(), key=len, reverse=True):
            if len(value) > 1:
                message = message.replace(value, "…")
        return f"an option pymongo cannot use: {message}"
    return None
