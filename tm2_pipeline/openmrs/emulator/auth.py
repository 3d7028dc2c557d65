"""Who is calling, for both of the emulator's APIs (REST and FHIR): OpenMRS's webapp-wide session.

Basic credentials work on any request and open a new session each time (Set-Cookie JSESSIONID,
path /openmrs); without them the JSESSIONID cookie names the session. How a failure looks is each
API's own business (REST: JSON 401 or the HTML "Session timed out"; FHIR: an HTML 401 page).
"""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request
from starlette.responses import Response

from tm2_pipeline.openmrs.emulator import representations as rep
from tm2_pipeline.openmrs.emulator.state import EmulatorState

# The one user every session is: its uuid (`GET /session`'s user, FHIR's recorder) and its person.
USER_UUID = "45ce6c2e-dd5a-11e6-9d9c-0242ac150002"
USER_PERSON = {"uuid": "24252571-dd5a-11e6-9d9c-0242ac150002", "display": "Super User"}


def emulator_state(request: Request) -> EmulatorState:
    return request.app.state.emulator


def credentials(request: Request) -> tuple[str, str] | Response | None:
    """(username, password) from a Basic header; an HTML 400 for a malformed one; None without."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        username, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return rep.html_page(400, "HTTP Status 400 – Bad Request", "Malformed Basic authorization header")
    return username, password


def authenticate(request: Request) -> tuple[str | None, Response | None, str | None]:
    """(user, error response, new session token)."""
    state = emulator_state(request)
    given = credentials(request)
    if isinstance(given, Response):
        return None, given, None
    if given is not None:
        if state.authenticate(*given):
            return given[0], None, state.new_session(given[0])
        return None, None, None
    cookie = request.cookies.get("JSESSIONID")
    if cookie:
        user = state.sessions.get(cookie)
        return (user, None, None) if user else (None, rep.session_timed_out(), None)
    return None, None, None


def with_cookie(response: Response, token: str | None) -> Response:
    if token:
        response.set_cookie("JSESSIONID", token, path="/openmrs", httponly=True)
    return response
