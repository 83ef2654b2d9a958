-- A route entry may be scoped to one channel and to a set of destination countries
-- (ISO 3166-1 alpha-2 codes, comma-separated, sorted). NULL admits every channel or
-- country. Positions stay unique per app across scopes: they order entries within one.
ALTER TABLE app_routes ADD COLUMN channel TEXT;
ALTER TABLE app_routes ADD COLUMN countries TEXT;
