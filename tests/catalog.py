"""Read the catalog of one PostgreSQL schema into a plain, comparable structure.

``schema_catalog(conn, schema)`` returns a dict of sorted lists of tuples built
from ``pg_catalog`` only. The schema name never appears in the result, so two
schemas with different names compare equal when their objects are the same:
while reading, ``search_path`` is ``pg_catalog, <schema>``, which makes
PostgreSQL render the schema's own objects unqualified (``job_spec[]``,
``SETOF _private_jobs``, ``FROM _private_jobs jobs``). Any qualified reference
that still shows up (an object shadowed by a ``pg_catalog`` name) is rewritten
to ``{{schema}}.`` when the quoted name cannot be mistaken for a table alias.

Deliberately not compared: OIDs, owners, sequence positions, function bodies
(``prosrc``) and flags PostgreSQL only clears lazily (``relhastriggers``).
The queries only use catalog columns present in PostgreSQL 12 and later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg

PLACEHOLDER = "{{schema}}"

Row = tuple[Any, ...]

# Every query takes the schema name as its only parameter (%(schema)s).
_QUERIES: dict[str, LiteralString] = {
    "relations": """
        select c.relname, c.relkind::text, c.relpersistence::text,
               c.relrowsecurity, c.relforcerowsecurity, c.relispartition,
               c.relreplident::text, c.reloptions::text, c.relacl::text,
               c.relnatts::int
        from pg_class as c
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = %(schema)s
    """,
    "columns": """
        select c.relname, a.attnum::int, a.attname,
               pg_catalog.format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid),
               a.attidentity::text, a.attgenerated::text, a.attisdropped,
               case when a.attcollation <> t.typcollation
                    then co.collname::text end,
               a.attstorage::text, a.attndims::int, a.attacl::text
        from pg_attribute as a
        join pg_class as c on c.oid = a.attrelid
        join pg_namespace as n on n.oid = c.relnamespace
        join pg_type as t on t.oid = a.atttypid
        left join pg_attrdef as d
          on d.adrelid = a.attrelid and d.adnum = a.attnum
        left join pg_collation as co on co.oid = a.attcollation
        where n.nspname = %(schema)s
          and a.attnum > 0
          and c.relkind in ('r', 'p', 'v', 'm', 'c', 'f')
    """,
    "constraints": """
        select c.relname, k.conname, k.contype::text,
               pg_catalog.pg_get_constraintdef(k.oid, true),
               k.condeferrable, k.condeferred, k.convalidated, k.connoinherit,
               i.relname
        from pg_constraint as k
        join pg_class as c on c.oid = k.conrelid
        join pg_namespace as n on n.oid = c.relnamespace
        left join pg_class as i on i.oid = k.conindid
        where n.nspname = %(schema)s
    """,
    "indexes": """
        select t.relname, i.relname,
               pg_catalog.pg_get_indexdef(x.indexrelid, 0, true),
               x.indisunique, x.indisprimary, x.indisexclusion,
               x.indimmediate, x.indisclustered, x.indisvalid,
               x.indisreplident
        from pg_index as x
        join pg_class as i on i.oid = x.indexrelid
        join pg_class as t on t.oid = x.indrelid
        join pg_namespace as n on n.oid = t.relnamespace
        where n.nspname = %(schema)s
    """,
    "types": """
        select t.typname, t.typtype::text, t.typcategory::text,
               coalesce(r.relkind::text, ''),
               coalesce(e.typname::text, ''),
               t.typnotnull, pg_catalog.format_type(t.typbasetype, t.typtypmod),
               t.typdefault, t.typacl::text
        from pg_type as t
        join pg_namespace as n on n.oid = t.typnamespace
        left join pg_class as r on r.oid = t.typrelid
        left join pg_type as e on e.oid = t.typelem and t.typcategory = 'A'
        where n.nspname = %(schema)s
    """,
    "functions": """
        select p.proname,
               pg_catalog.pg_get_function_identity_arguments(p.oid),
               pg_catalog.pg_get_function_arguments(p.oid),
               pg_catalog.pg_get_function_result(p.oid),
               l.lanname, p.prokind::text, p.proisstrict, p.provolatile::text,
               p.prosecdef, p.proretset, p.proleakproof, p.proparallel::text,
               p.procost::float8, p.prorows::float8, p.proconfig::text,
               p.proacl::text
        from pg_proc as p
        join pg_namespace as n on n.oid = p.pronamespace
        join pg_language as l on l.oid = p.prolang
        where n.nspname = %(schema)s
    """,
    "views": """
        select c.relname, pg_catalog.pg_get_viewdef(c.oid, true),
               c.relkind::text
        from pg_class as c
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and c.relkind in ('v', 'm')
    """,
    "sequences": """
        select c.relname, pg_catalog.format_type(s.seqtypid, null),
               s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
               s.seqcycle, coalesce(dt.relname::text, ''),
               coalesce(da.attname::text, ''), coalesce(d.deptype::text, '')
        from pg_sequence as s
        join pg_class as c on c.oid = s.seqrelid
        join pg_namespace as n on n.oid = c.relnamespace
        left join pg_depend as d
          on d.classid = 'pg_class'::regclass and d.objid = c.oid
         and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
        left join pg_class as dt on dt.oid = d.refobjid
        left join pg_attribute as da
          on da.attrelid = d.refobjid and da.attnum = d.refobjsubid
        where n.nspname = %(schema)s
    """,
    "triggers": """
        select c.relname, g.tgname,
               pg_catalog.pg_get_triggerdef(g.oid, true), g.tgenabled::text
        from pg_trigger as g
        join pg_class as c on c.oid = g.tgrelid
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and not g.tgisinternal
    """,
    "rules": """
        select r.tablename, r.rulename, r.definition
        from pg_catalog.pg_rules as r
        where r.schemaname = %(schema)s
    """,
    "policies": """
        select c.relname, p.polname, p.polcmd::text, p.polpermissive,
               p.polroles::regrole[]::text,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid),
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
        from pg_policy as p
        join pg_class as c on c.oid = p.polrelid
        join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = %(schema)s
    """,
    "comments": """
        select d.classoid::regclass::text, coalesce(c.relname, p.proname,
               t.typname, k.conname, s.nspname)::text,
               d.objsubid, d.description
        from pg_description as d
        left join pg_class as c
          on d.classoid = 'pg_class'::regclass and c.oid = d.objoid
        left join pg_proc as p
          on d.classoid = 'pg_proc'::regclass and p.oid = d.objoid
        left join pg_type as t
          on d.classoid = 'pg_type'::regclass and t.oid = d.objoid
        left join pg_constraint as k
          on d.classoid = 'pg_constraint'::regclass and k.oid = d.objoid
        left join pg_namespace as s
          on d.classoid = 'pg_namespace'::regclass and s.oid = d.objoid
        where coalesce(c.relnamespace, p.pronamespace, t.typnamespace,
                       k.connamespace, s.oid)
              = (select oid from pg_namespace where nspname = %(schema)s)
    """,
}

_WHITESPACE = re.compile(r"\s+")


def _normalise(value: Any, qualifier: str | None, collapse_space: bool) -> Any:
    if isinstance(value, str):
        text = value
        if qualifier is not None:
            text = text.replace(qualifier, PLACEHOLDER + ".")
        if collapse_space:
            text = _WHITESPACE.sub(" ", text).strip()
        return text
    return value


def _rows(
    conn: psycopg.Connection[Any],
    query: LiteralString,
    schema: str,
    qualifier: str | None,
    collapse_space: bool = False,
) -> list[Row]:
    with conn.cursor() as cur:
        cur.execute(query, {"schema": schema})
        fetched: Sequence[Sequence[Any]] = cur.fetchall()
    rows = [
        tuple(_normalise(v, qualifier, collapse_space) for v in row) for row in fetched
    ]
    rows.sort(key=_sort_key)
    return rows


def _sort_key(row: Row) -> tuple[tuple[bool, Any], ...]:
    # None sorts first; the flag keeps None from being compared with a value.
    return tuple((v is not None, v if v is not None else 0) for v in row)


def schema_catalog(conn: psycopg.Connection[Any], schema: str) -> dict[str, object]:
    """Return a normalised, sorted description of everything in ``schema``."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "select current_setting('search_path'), pg_catalog.quote_ident(%s)",
            (schema,),
        )
        found = cur.fetchone()
        if found is None:  # pragma: no cover - a bare select always has a row
            raise RuntimeError("catalog query returned no row")
        saved, quoted = str(found[0]), str(found[1])
        cur.execute(
            "select pg_catalog.set_config('search_path', %s, true)",
            ("pg_catalog, " + quoted,),
        )
        # An unquoted qualifier such as "jobs." would also match alias
        # references in view text, so only quoted names are rewritten.
        qualifier = quoted + "." if quoted.startswith('"') else None
        result: dict[str, object] = {}
        for name, query in _QUERIES.items():
            result[name] = _rows(
                conn, query, schema, qualifier, collapse_space=name == "views"
            )
        cur.execute("select pg_catalog.set_config('search_path', %s, true)", (saved,))
    return result


def diff_catalogs(
    left: dict[str, object], right: dict[str, object]
) -> dict[str, tuple[list[object], list[object]]]:
    """Per section: (entries only in ``left``, entries only in ``right``)."""
    out: dict[str, tuple[list[object], list[object]]] = {}
    for key in sorted(set(left) | set(right)):
        a = left.get(key, [])
        b = right.get(key, [])
        la = list(a) if isinstance(a, list) else [a]
        lb = list(b) if isinstance(b, list) else [b]
        only_left = [x for x in la if x not in lb]
        only_right = [x for x in lb if x not in la]
        if only_left or only_right:
            out[key] = (only_left, only_right)
    return out
