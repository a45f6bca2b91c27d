-- Rules: every version of every rule, and the rule set versions they make up. A rule set version is made by
-- each PUT /rules or `sluice rules apply` that changes anything; only the rules it changed get a new version.
CREATE TABLE rule_sets (
  version INTEGER PRIMARY KEY,
  created_at TEXT NOT NULL,
  created_by TEXT NOT NULL,
  reason TEXT NOT NULL,
  thresholds_json TEXT NOT NULL
);
CREATE TABLE rule_versions (
  rule_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  rule_set_version INTEGER NOT NULL REFERENCES rule_sets (version),
  -- 1: this version removes the rule from the set (the earlier versions stay for history).
  removed INTEGER NOT NULL,
  name TEXT NOT NULL,
  description TEXT,
  object TEXT NOT NULL,
  ord INTEGER NOT NULL,
  when_expr TEXT NOT NULL,
  score REAL NOT NULL,
  severity TEXT NOT NULL,
  tags_json TEXT NOT NULL,
  stop INTEGER NOT NULL,
  mode TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  features_json TEXT NOT NULL,
  PRIMARY KEY (rule_id, version)
);
