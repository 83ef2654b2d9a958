-- App policy settings (JSON: consent rules, quiet-hours mode, allowed countries, pause,
-- keyword replies). Absent keys take their defaults.
ALTER TABLE apps ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
