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
