-- Flat-file ingestion: SFTP users, dropped files and what became of them, upload links.
CREATE TABLE sftp_users (
  name TEXT PRIMARY KEY,
  -- scrypt$N$r$p$salt$hash (base64url); NULL: this user logs in by key only.
  password_hash TEXT,
  -- authorized_keys lines; empty: password only.
  public_keys TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL
);
-- One row per file taken from a drop root (an SFTP user's folder or a configured drop dir).
CREATE TABLE file_drops (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  source TEXT NOT NULL,
  -- The drop root (absolute) and the file's path inside it, as dropped.
  root TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  object TEXT,
  -- The job made from it; NULL when it was refused before one was made (duplicate, unknown format or object).
  job_id TEXT,
  -- Where the file waits while its job runs (root/processing/...), NULL once settled.
  held_path TEXT,
  -- NULL while the job runs; then processed or failed.
  outcome TEXT,
  detail TEXT,
  created_at TEXT NOT NULL,
  settled_at TEXT
);
CREATE INDEX file_drops_content ON file_drops (sha256, object);
CREATE INDEX file_drops_unsettled ON file_drops (settled_at) WHERE settled_at IS NULL;
CREATE TABLE upload_links (
  id TEXT PRIMARY KEY,
  -- SHA-256 of the whole token; the token itself is shown once, at creation.
  token_hash TEXT NOT NULL UNIQUE,
  object TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  max_uploads INTEGER,
  uploads INTEGER NOT NULL DEFAULT 0,
  created_by TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
-- The HMAC key upload link tokens are signed with, made on first use; one row.
CREATE TABLE upload_link_secret (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  secret TEXT NOT NULL
);
