"""Check real HTTP responses against ``src/moeconnect/openapi.json``.

One call, usable from any test that holds an ``httpx.Response``::

    from tests.openapi_check import assert_response_matches

    response = httpx.post(url, ...)
    assert_response_matches(response)  # path and method are taken from response.request

What it checks, for the operation ``(path, method)`` of the document:

- the status is documented (or a ``default`` response exists);
- the body is JSON of a documented media type and validates against its schema (OpenAPI 3.1
  schemas are JSON Schema 2020-12, checked with ``jsonschema``; ``$ref`` resolves in the document);
- every header the response declares ``required`` is present, and every declared header that is
  present validates against its schema (integer schemas are read from the header's text).

A path the document does not describe must answer the shared ``NotFound`` response (404); a
described path asked with a method it does not list, the shared ``MethodNotAllowed`` (405).
Paths with templates (``/admin/v1/workspaces/{workspace_id}``) are matched segment by segment;
pass ``path`` explicitly to skip the matching.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from moeconnect.http.app import openapi_document

__all__ = ["assert_response_matches", "document", "find_operation"]

_URI = "urn:moeconnect:openapi"
Json = dict[str, Any]


@functools.cache
def document() -> Json:
    """The OpenAPI document as the package ships it (the one ``/openapi.json`` serves)."""
    return openapi_document()


@functools.cache
def _registry() -> Registry[Any]:
    return Registry().with_resource(_URI, DRAFT202012.create_resource(document()))


def _pointer(parts: list[str]) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _deref(node: Json) -> tuple[Json, list[str] | None]:
    """Follow an OpenAPI ``$ref`` (to a response or header); also returns where it lives."""
    where = None
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local $ref supported, not {ref}"
        where = [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
        node = document()
        for part in where:
            node = node[part]
    return node, where


def _validate(instance: object, schema_location: list[str], what: str) -> None:
    validator = Draft202012Validator(
        {"$ref": f"{_URI}#/{_pointer(schema_location)}"}, registry=_registry()
    )
    problems = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if problems:
        lines = [f"- {'/'.join(map(str, p.path)) or '(root)'}: {p.message}" for p in problems]
        raise AssertionError(f"{what} does not match the OpenAPI document:\n" + "\n".join(lines))


def find_operation(path: str, method: str) -> tuple[str, Json] | None:
    """The document's ``(path template, operation)`` for a concrete path and method."""
    paths: Json = document().get("paths", {})
    method = method.lower()
    if path in paths:
        return (path, paths[path][method]) if method in paths[path] else None
    segments = path.split("/")
    for template, item in paths.items():
        parts = template.split("/")
        if len(parts) != len(segments) or method not in item:
            continue
        if all(
            re.fullmatch(r"\{[^}]+\}", p) is not None or p == s
            for p, s in zip(parts, segments, strict=True)
        ):
            return template, item[method]
    return None


def _check_header(response: httpx.Response, name: str, spec: Json, location: list[str]) -> None:
    value = response.headers.get(name)
    if value is None:
        assert not spec.get("required", False), (
            f"{response.status_code} response lacks the required header {name}"
        )
        return
    schema = spec.get("schema", {})
    instance: object = value
    if schema.get("type") == "integer":
        assert re.fullmatch(r"\d+", value), f"header {name}: {value!r} is not an integer"
        instance = int(value)
    _validate(instance, [*location, "schema"], f"header {name}: {value!r}")


def assert_response_matches(
    response: httpx.Response, path: str | None = None, method: str | None = None
) -> None:
    """Fail with a readable message unless ``response`` is one the document describes."""
    path = path or response.request.url.path
    method = (method or response.request.method).lower()
    found = find_operation(path, method)
    status = str(response.status_code)
    if found is None and path in document().get("paths", {}):
        # A documented path asked with a method it doesn't have: the shared 405 response.
        assert status == "405", f"{method.upper()} {path} is undocumented but answered {status}"
        spec, location = _deref({"$ref": "#/components/responses/MethodNotAllowed"})
    elif found is None:
        assert status == "404", f"{method.upper()} {path} is undocumented but answered {status}"
        spec, location = _deref({"$ref": "#/components/responses/NotFound"})
    else:
        template, operation = found
        documented = operation.get("responses", {})
        key = status if status in documented else "default"
        assert key in documented, (
            f"{method.upper()} {template} answered {status}, which the document doesn't list "
            f"(it lists {', '.join(documented)})"
        )
        spec, location = _deref(documented[key])
        if location is None:
            location = ["paths", template, method, "responses", key]
    assert location is not None
    for name, header in spec.get("headers", {}).items():
        header_spec, header_location = _deref(header)
        _check_header(response, name, header_spec, header_location or [*location, "headers", name])
    content: Json = spec.get("content", {})
    if not content:
        return
    media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    assert media in content, f"content type {media!r} is not documented (only {list(content)})"
    if method == "head":
        return
    try:
        body = json.loads(response.content)
    except ValueError as err:
        raise AssertionError(f"the body is not JSON: {response.content[:200]!r}") from err
    if "schema" in content[media]:
        _validate(body, [*location, "content", media, "schema"], f"{status} body {body!r}")
