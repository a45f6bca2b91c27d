-- Dashboard sign-in sessions: one row per signed-in browser. The cookie carries a random token; only its
-- SHA-256 is stored. A session acts as the API key it was opened with and ends when that key is revoked.
CREATE TABLE dashboard_sessions (
  token_hash TEXT PRIMARY KEY,
  key_id TEXT NOT NULL REFERENCES api_keys (id),
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
