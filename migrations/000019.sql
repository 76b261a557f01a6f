--! breaking-change
-- Migration 19 changes nothing in the schema. It exists only so that the
-- migrations table records a breaking revision here, which stops workers that
-- predate the pool-based runtime from running against this database.
select null::int as unchanged;
