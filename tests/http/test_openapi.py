"""Must-show 7: ``/openapi.json`` is valid OpenAPI 3.1 and describes what the server answers.

Every response the endpoint tests receive is checked against the document by
:func:`tests.openapi_check.assert_response_matches` (``tests/http/wire.py`` calls it for every
Test Connection response); this module checks the document itself, the operational paths, and
that the checker really rejects responses the document does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

import moeconnect
from moeconnect.errors import CATALOGUE
from moeconnect.testing import MoeconnectServer

from ..core.test_errors import SPEC_TABLE
from ..openapi_check import assert_response_matches, document
from .wire import NO_LIMITS, PATH

FILE = Path(moeconnect.__file__).parent / "openapi.json"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MoeconnectServer]:
    with MoeconnectServer(workdir=tmp_path_factory.mktemp("openapi"), env=NO_LIMITS) as running:
        yield running


def test_document_is_valid_openapi_3_1() -> None:
    spec = json.loads(FILE.read_text("utf-8"))
    assert spec["openapi"].startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)
    assert list(OpenAPIV31SpecValidator(spec).iter_errors()) == []


def test_document_describes_the_public_surface() -> None:
    paths = document()["paths"]
    post = paths[PATH]["post"]
    assert post["security"] == [{"basicAuth": []}]
    assert document()["components"]["securitySchemes"]["basicAuth"] == {
        "type": "http",
        "scheme": "basic",
        "description": "`Basic base64(workspace_id:data_api_key)`.",
    }
    assert any(p["name"] == "MOE-APPKEY" and p["in"] == "header" for p in post["parameters"])
    assert set(post["responses"]) == {"200", "400", "401", "403", "413", "415", "429", "500", "503"}
    assert paths[PATH]["get"]["responses"]["405"]
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert "get" in paths[path]


def test_error_codes_match_the_catalogue_and_the_spec() -> None:
    schemas = document()["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code for _, _, code in SPEC_TABLE}
    responses = document()["components"]["responses"]
    seen: set[str] = set()
    for name, response in responses.items():
        schema = response["content"]["application/json"]["schema"]
        if "allOf" not in schema or not name[0].isupper():
            continue
        codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
        statuses = {CATALOGUE[c].status for c in codes if c in schemas["ErrorCode"]["enum"]}
        assert len(statuses) <= 1, (name, codes)
        seen.update(codes)
    assert {code for _, _, code in SPEC_TABLE} <= seen


def test_served_document_is_the_file(srv: MoeconnectServer) -> None:
    response = httpx.get(srv.base_url + "/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(FILE.read_text("utf-8"))
    assert_response_matches(response)


def test_operational_paths_match(srv: MoeconnectServer) -> None:
    for path in ("/healthz", "/readyz"):
        response = httpx.get(srv.base_url + path)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert_response_matches(response)


def test_wrong_method_on_another_path_is_405_with_allow(srv: MoeconnectServer) -> None:
    response = httpx.post(srv.base_url + "/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    error = response.json()["error"]
    assert error["code"] == "METHOD_NOT_ALLOWED" and "POST is not allowed" in error["message"]
    assert "GET" in error["message"].split(";")[0]
    assert_response_matches(response)


# -- the checker rejects what the document does not allow ----------------------------------------


def _response(status: int, body: object, path: str = PATH, **headers: str) -> httpx.Response:
    base = {"content-type": "application/json", "cache-control": "no-store"}
    base["x-request-id"] = "abcdefgh12345678"
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    request = httpx.Request("POST", "http://test" + path)
    return httpx.Response(status, headers=base, content=json.dumps(body).encode(), request=request)


def _envelope(code: str, type_: str) -> dict[str, object]:
    error = {"message": "m.", "type": type_, "code": code, "request_id": "abcdefgh12345678"}
    return {"status": "fail", "error": error}


def test_checker_accepts_a_good_response() -> None:
    assert_response_matches(_response(200, {"status": "success", "app_name": "A"}))
    auth = "Basic realm=x"
    unauthorized = _envelope("KEY_MISMATCH", "Authentication required")
    assert_response_matches(_response(401, unauthorized, www_authenticate=auth))


@pytest.mark.parametrize(
    ("response", "complaint"),
    [
        (_response(200, {"status": "success", "app_name": "A", "extra": 1}), "extra"),
        (_response(200, {"status": "ok", "app_name": "A"}), "status"),
        (_response(401, _envelope("KEY_MISMATCH", "Authentication required")), "WWW-Authenticate"),
        (
            _response(400, _envelope("KEY_MISMATCH", "Bad Request")),
            "KEY_MISMATCH",
        ),
        (_response(418, _envelope("INTERNAL", "Teapot")), "418"),
        (_response(503, _envelope("STORE_UNAVAILABLE", "Service Unavailable")), "Retry-After"),
        (
            _response(200, {"status": "success", "app_name": "A"}, cache_control="max-age=60"),
            "no-store",
        ),
        (_response(200, {"status": "success", "app_name": "A"}, x_request_id="short"), "short"),
        (_response(200, {"status": "success", "app_name": "A"}, path="/nowhere"), "undocumented"),
    ],
)
def test_checker_rejects_a_bad_response(response: httpx.Response, complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        assert_response_matches(response)
