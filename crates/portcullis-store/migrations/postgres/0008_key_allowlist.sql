-- Networks a key may be used from: comma-separated CIDRs, empty for anywhere.
ALTER TABLE api_keys ADD COLUMN allowed_cidrs TEXT NOT NULL DEFAULT '';
