-- Batch jobs: one row per uploaded payload, with its state machine, counts and resume checkpoint.
CREATE TABLE batch_jobs (
  id TEXT PRIMARY KEY,
  object TEXT,
  state TEXT NOT NULL,
  format TEXT NOT NULL,
  compressed INTEGER NOT NULL,
  source TEXT NOT NULL,
  file_name TEXT,
  payload_path TEXT NOT NULL,
  payload_bytes INTEGER NOT NULL,
  payload_sha256 TEXT NOT NULL,
  idempotency_key TEXT UNIQUE,
  update_schema INTEGER NOT NULL,
  evaluate_rules INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  total INTEGER,
  accepted INTEGER NOT NULL DEFAULT 0,
  rejected INTEGER NOT NULL DEFAULT 0,
  stored INTEGER NOT NULL DEFAULT 0,
  evaluated INTEGER NOT NULL DEFAULT 0,
  checkpoint_row INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  worker_id TEXT,
  lease_until INTEGER,
  error TEXT,
  created_at TEXT NOT NULL,
  queued_at TEXT,
  validating_at TEXT,
  processing_at TEXT,
  finished_at TEXT
);
CREATE INDEX batch_jobs_state ON batch_jobs (state, created_at);
CREATE TABLE batch_errors (
  job_id TEXT NOT NULL REFERENCES batch_jobs (id) ON DELETE CASCADE,
  row INTEGER NOT NULL,
  record_key TEXT,
  pointer TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX batch_errors_job ON batch_errors (job_id, row);
