"""Signed sessions and CSRF tokens, in-process: forgery, tampering, expiry, cross-session use."""

from __future__ import annotations

from moeconnect.dashboard.sessions import SessionSigner

SECRET = b"s" * 32


def test_a_session_round_trips_and_holds_no_secret() -> None:
    signer = SessionSigner(SECRET)
    session, cookie = signer.new_session("tok_abc", now=1_000_000)
    assert signer.verify(cookie, now=1_000_100) == session
    assert session.token_id == "tok_abc"
    assert SECRET.decode() not in cookie
    assert len(session.session_id) >= 20


def test_tampered_forged_or_foreign_cookies_are_refused() -> None:
    signer = SessionSigner(SECRET)
    _session, cookie = signer.new_session("tok_abc", now=1_000_000)
    parts = cookie.split(".")
    other_token = ".".join([parts[0], "tok_evil", *parts[2:]])
    later = ".".join([parts[0], parts[1], str(int(parts[2]) + 3600), *parts[3:]])
    for bad in (other_token, later, cookie + "x", cookie[:-2], "", "v1.a.b.c", "v2." + cookie[3:]):
        assert signer.verify(bad, now=1_000_100) is None, bad
    assert SessionSigner(b"t" * 32).verify(cookie, now=1_000_100) is None


def test_sessions_expire() -> None:
    signer = SessionSigner(SECRET, lifetime=3600)
    _session, cookie = signer.new_session("tok_abc", now=1_000_000)
    assert signer.verify(cookie, now=1_003_599) is not None
    assert signer.verify(cookie, now=1_003_600) is None
    assert signer.verify(cookie, now=999_000) is None  # issued in the future


def test_csrf_tokens_belong_to_one_session_and_purpose() -> None:
    signer = SessionSigner(SECRET)
    first, _ = signer.new_session("tok_abc")
    second, _ = signer.new_session("tok_abc")
    token = signer.csrf_token(first.session_id)
    assert signer.csrf_ok(first.session_id, token)
    assert not signer.csrf_ok(second.session_id, token)
    assert not signer.csrf_ok(first.session_id, token, "signin")
    for bad in (None, "", "x", 42, token[:-1]):
        assert not signer.csrf_ok(first.session_id, bad)
    assert not signer.csrf_ok(None, token)
