"""What a user would write instead: FastAPI + pydantic + ``HTTPBasic``, one SQLite lookup a request.

Deliberately ordinary, not tuned: a pydantic model for the body, FastAPI's ``HTTPBasic``
dependency, a sync endpoint (run in the thread pool) that opens SQLite and looks the workspace
up. The database (``PEER_DB``) holds ``workspaces(id, name, key_sha256)``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel

DB = os.environ.get("PEER_DB", "peer.db")
app = FastAPI()
security = HTTPBasic()


class ConnectionRequest(BaseModel):
    app_id: str
    app_secret: str
    source: str
    region: str


class Success(BaseModel):
    status: str
    app_name: str


@app.post("/v1/integrations/authentication", response_model=Success)
def authenticate(
    body: ConnectionRequest,
    credentials: HTTPBasicCredentials = Depends(security),  # noqa: B008
    moe_appkey: str = Header(...),
) -> Success:
    if moe_appkey != credentials.username or body.app_id != credentials.username:
        raise HTTPException(400, "workspace ID mismatch")
    connection = sqlite3.connect(DB)
    try:
        row = connection.execute(
            "SELECT name, key_sha256 FROM workspaces WHERE id = ?", (credentials.username,)
        ).fetchone()
    finally:
        connection.close()
    digest = hashlib.sha256(credentials.password.encode()).hexdigest()
    if row is None or not hmac.compare_digest(row[1], digest):
        raise HTTPException(
            401, "App Secret key mismatch. Please login to the dashboard to verify key"
        )
    return Success(status="success", app_name=row[0])
