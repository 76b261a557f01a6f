-- Runtime queries, one per "-- name:" header. {{schema}} stands for the quoted
-- schema identifier. Parameters use psycopg's %(name)s placeholders.
-- Every query that returns jobs selects JOB_COLUMNS (see _sql.py) in that order.

-- name: server_state
-- The server version and the newest (and newest breaking) migration applied.
select
  current_setting('server_version_num')::int,
  (select max(id) from {{schema}}.migrations),
  (select max(id) from {{schema}}.migrations where breaking)

-- name: bootstrap
create schema if not exists {{schema}};
create table if not exists {{schema}}.migrations (
  id int primary key,
  ts timestamptz default now() not null
);
alter table {{schema}}.migrations
  add column if not exists breaking boolean not null default false;

-- name: mark_breaking
update {{schema}}.migrations set breaking = true
where id = any(%(ids)s::int[]) and not breaking

-- name: record_migrations
insert into {{schema}}.migrations (id, breaking)
select id, id = any(%(breaking)s::int[])
from unnest(%(ids)s::int[]) as step(id)
order by id

-- name: notify_migrated
select pg_notify('worker:migrate', %(message)s::text)

-- name: add_job
-- Task and queue names come back NULL: the function may create them, and rows
-- it creates are invisible to this statement's snapshot.
with job as (
  select * from {{schema}}.add_job(
    identifier => %(identifier)s::text,
    payload => %(payload)s::json,
    queue_name => %(queue_name)s::text,
    run_at => %(run_at)s::timestamptz,
    max_attempts => %(max_attempts)s::int,
    job_key => %(job_key)s::text,
    priority => %(priority)s::int,
    flags => %(flags)s::text[],
    job_key_mode => %(job_key_mode)s::text
  )
)
select {{bare_job_columns}}
from job

-- name: add_jobs
-- The specs arrive as one JSON array; one round trip whatever their number.
-- Like add_job, it returns no names: the tasks and queues the function just
-- created are invisible to this statement's snapshot (see job_names).
with job as (
  select * from {{schema}}.add_jobs(
    array(
      select spec
      from json_populate_recordset(
        null::{{schema}}.job_spec, %(specs)s::json
      ) as spec
    ),
    %(preserve_run_at)s::boolean
  )
)
select {{bare_job_columns}}
from job

-- name: remove_job
with job as (
  select * from {{schema}}.remove_job(%(job_key)s::text)
)
select {{job_columns}}
from job
join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id

-- name: complete_jobs
with job as (
  select * from {{schema}}.complete_jobs(%(ids)s::bigint[])
)
select {{job_columns}}
from job
join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id

-- name: permanently_fail_jobs
with job as (
  select * from {{schema}}.permanently_fail_jobs(
    %(ids)s::bigint[], %(message)s::text
  )
)
select {{job_columns}}
from job
join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id

-- name: reschedule_jobs
with job as (
  select * from {{schema}}.reschedule_jobs(
    %(ids)s::bigint[],
    run_at => %(run_at)s::timestamptz,
    priority => %(priority)s::int,
    attempts => %(attempts)s::int,
    max_attempts => %(max_attempts)s::int
  )
)
select {{job_columns}}
from job
join {{schema}}._private_tasks as tasks on tasks.id = job.task_id
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id

-- name: force_unlock_workers
select {{schema}}.force_unlock_workers(%(worker_ids)s::text[])

-- name: gc_task_identifiers
-- Tasks no job refers to, except those the caller keeps; a NULL keep-list
-- keeps nothing rather than matching nothing.
delete from {{schema}}._private_tasks as tasks
where not exists (
  select 1 from {{schema}}._private_jobs as jobs where jobs.task_id = tasks.id
)
and not (tasks.identifier = any(coalesce(%(keep)s::text[], '{}')))

-- name: gc_job_queues
-- NOT EXISTS rather than NOT IN: jobs without a queue have a NULL queue id.
delete from {{schema}}._private_job_queues as queues
where queues.locked_at is null
and not exists (
  select 1 from {{schema}}._private_jobs as jobs
  where jobs.job_queue_id = queues.id
)

-- name: delete_permafailed_jobs
delete from {{schema}}._private_jobs as jobs
where jobs.attempts >= jobs.max_attempts
and jobs.locked_at is null

-- name: task_ids
-- Register the identifiers a worker handles and return their ids; only the
-- missing ones are inserted, so the identity sequence is not consumed.
with missing as (
  insert into {{schema}}._private_tasks (identifier)
  select wanted.identifier
  from unnest(%(identifiers)s::text[]) as wanted(identifier)
  where not exists (
    select 1 from {{schema}}._private_tasks as known
    where known.identifier = wanted.identifier
  )
  on conflict do nothing
  returning id, identifier
)
select id, identifier from missing
union all
select id, identifier from {{schema}}._private_tasks
where identifier = any(%(identifiers)s::text[])

-- name: job_names
-- Resolve task and queue ids to names after add_job(s) created them.
select true, id, identifier from {{schema}}._private_tasks
where id = any(%(task_ids)s::int[])
union all
select false, id, queue_name from {{schema}}._private_job_queues
where id = any(%(queue_ids)s::int[])

-- name: claim_jobs
-- Lock up to %(limit)s runnable jobs for this pool, best first: available,
-- due, of our tasks, carrying no forbidden flag, outside any named queue or in
-- one we can lock now. At most one job per named queue, so a queue runs one job
-- at a time across every worker. Attempts are counted here, at claim time.
with candidates as (
  select jobs.id, jobs.job_queue_id, jobs.priority, jobs.run_at
  from {{schema}}._private_jobs as jobs
  where jobs.is_available = true
    and jobs.run_at <= now()
    and jobs.task_id = any(%(task_ids)s::int[])
    and (
      jobs.job_queue_id is null
      or jobs.job_queue_id in (
        select queues.id
        from {{schema}}._private_job_queues as queues
        where queues.is_available = true
        for update
        skip locked
      )
    )
    and (jobs.flags ?| %(forbidden_flags)s::text[]) is not true
  order by jobs.priority asc, jobs.run_at asc
  limit %(limit)s
  for update
  skip locked
),
chosen as (
  select distinct on (
    candidates.job_queue_id,
    case when candidates.job_queue_id is null then candidates.id end
  ) candidates.id, candidates.job_queue_id
  from candidates
  order by
    candidates.job_queue_id,
    case when candidates.job_queue_id is null then candidates.id end,
    candidates.priority asc,
    candidates.run_at asc
),
locked_queues as (
  update {{schema}}._private_job_queues as queues
  set locked_by = %(pool_id)s::text, locked_at = now()
  from chosen
  where queues.id = chosen.job_queue_id
),
job as (
  -- By primary key lookups: a join on chosen would let the planner hash the
  -- whole jobs table on every claim.
  update {{schema}}._private_jobs as jobs
  set
    attempts = jobs.attempts + 1,
    locked_by = %(pool_id)s::text,
    locked_at = now()
  where jobs.id = any(array(select chosen.id from chosen))
  returning jobs.*
)
select {{job_columns_no_task}}
from job
left join {{schema}}._private_job_queues as queues on queues.id = job.job_queue_id
order by job.priority asc, job.run_at asc, job.id asc

-- name: complete_claimed
-- Delete finished jobs and unlock their queues where this pool holds them.
with done as (
  delete from {{schema}}._private_jobs as jobs
  where jobs.id = any(%(ids)s::bigint[])
  returning jobs.job_queue_id
)
update {{schema}}._private_job_queues as queues
set locked_by = null, locked_at = null
from done
where queues.id = done.job_queue_id and queues.locked_by = %(pool_id)s::text

-- name: fail_claimed
-- Record each failure, back off by exp(min(attempts, 10)) seconds, unlock the
-- job (only where this pool holds it) and its queue. A failure may replace the
-- payload: a batch keeps only the items that failed.
with failed as (
  update {{schema}}._private_jobs as jobs
  set
    last_error = failure.message,
    run_at = greatest(now(), jobs.run_at)
      + exp(least(jobs.attempts, 10)) * interval '1 second',
    locked_by = null,
    locked_at = null,
    payload = coalesce(failure.payload, jobs.payload)
  from json_to_recordset(%(failures)s::json)
    as failure(id bigint, message text, payload json)
  where jobs.id = failure.id and jobs.locked_by = %(pool_id)s::text
  returning jobs.id, jobs.job_queue_id, jobs.attempts, jobs.max_attempts,
    jobs.run_at
),
unlocked as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  from failed
  where queues.id = failed.job_queue_id and queues.locked_by = %(pool_id)s::text
)
select id, attempts, max_attempts, run_at from failed

-- name: return_claimed
-- Give back jobs that were claimed but never started, refunding the attempt,
-- and wake listening workers (as add_jobs does) so that one idle now runs them.
with returned as (
  update {{schema}}._private_jobs as jobs
  set
    attempts = greatest(0, jobs.attempts - 1),
    locked_by = null,
    locked_at = null
  where jobs.id = any(%(ids)s::bigint[]) and jobs.locked_by = %(pool_id)s::text
  returning jobs.job_queue_id
),
unlocked as (
  update {{schema}}._private_job_queues as queues
  set locked_by = null, locked_at = null
  from returned
  where queues.id = returned.job_queue_id and queues.locked_by = %(pool_id)s::text
)
select pg_notify(
  'jobs:insert',
  '{"r":' || random()::text || ',"count":' || count(*)::text || '}'
)
from returned
having count(*) > 0

-- name: reset_stale_locks
-- Unlock jobs and queues whose lock is over four hours old (their worker is
-- presumed dead); such jobs keep the attempt they used and may run at once.
with jobs_reset as (
  update {{schema}}._private_jobs as jobs
  set locked_at = null, locked_by = null, run_at = greatest(jobs.run_at, now())
  where jobs.locked_at < now() - interval '4 hours'
  returning jobs.id
),
queues_reset as (
  update {{schema}}._private_job_queues as queues
  set locked_at = null, locked_by = null
  where queues.locked_at < now() - interval '4 hours'
  returning queues.id
)
select (select count(*) from jobs_reset), (select count(*) from queues_reset)

-- name: cron_known
select identifier, known_since, last_execution
from {{schema}}._private_known_crontabs

-- name: cron_register
-- Identifiers seen for the first time become known now, without backfill.
insert into {{schema}}._private_known_crontabs (identifier, known_since)
select item.identifier, %(now)s::timestamptz
from unnest(%(identifiers)s::text[]) as item(identifier)
on conflict do nothing

-- name: cron_schedule
-- Add the jobs of the items due at %(ts)s, each at most once across every
-- worker of any language: an item's job is added only by the statement whose
-- upsert moves its last_execution forward to %(ts)s.
with specs as (
  select *
  from json_to_recordset(%(specs)s::json) as spec(
    index int,
    identifier text,
    task text,
    payload json,
    queue_name text,
    max_attempts smallint,
    priority smallint,
    job_key text,
    job_key_mode text
  )
),
claimed as (
  insert into {{schema}}._private_known_crontabs as known
    (identifier, known_since, last_execution)
  select specs.identifier, %(ts)s::timestamptz, %(ts)s::timestamptz
  from specs
  on conflict (identifier) do update
  set last_execution = excluded.last_execution
  where known.last_execution is null
    or known.last_execution < excluded.last_execution
  returning known.identifier
)
select specs.identifier, (
  {{schema}}.add_job(
    specs.task,
    specs.payload,
    specs.queue_name,
    %(ts)s::timestamptz,
    specs.max_attempts,
    specs.job_key,
    specs.priority,
    null,
    specs.job_key_mode
  )
).id
from specs
join claimed on claimed.identifier = specs.identifier
order by specs.index
