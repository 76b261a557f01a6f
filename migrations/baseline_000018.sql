-- Baseline for a fresh install: builds, in an empty schema, the same catalog
-- that graphile-worker 0.18.0 reaches after applying its migration 000018.
--
-- {{schema}} is replaced by the runner with the already-quoted schema
-- identifier. The runner creates the schema and the "migrations" table itself,
-- so neither is created here.
--
-- Several object names below (jobs_pkey1, jobs_key_key1, job_queues_pkey1,
-- jobs_id_seq1, the jobs_*/tasks_*/job_queues_* names on the _private_*
-- tables) look odd for a fresh schema. They are the names PostgreSQL produced
-- on an upgraded Node install (tables were rebuilt next to their predecessors
-- and later renamed), and they are kept verbatim so that Python-created and
-- Node-created schemas are indistinguishable in pg_catalog. PostgreSQL 18
-- records NOT NULL constraints by name too, so those are named explicitly
-- (older servers accept the names and ignore them).


-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

create table {{schema}}._private_job_queues (
  id int constraint job_queues_id_not_null not null
    generated always as identity (sequence name {{schema}}.job_queues_id_seq),
  queue_name text constraint job_queues_queue_name_not_null1 not null,
  locked_at timestamptz,
  locked_by text,
  is_available boolean constraint job_queues_is_available_not_null not null
    generated always as ((locked_at is null)) stored,
  constraint job_queues_pkey1 primary key (id),
  constraint job_queues_queue_name_key unique (queue_name),
  constraint job_queues_queue_name_check check (length(queue_name) <= 128)
);

create table {{schema}}._private_tasks (
  id int constraint tasks_id_not_null not null
    generated always as identity (sequence name {{schema}}.tasks_id_seq),
  identifier text constraint tasks_identifier_not_null not null,
  constraint tasks_pkey primary key (id),
  constraint tasks_identifier_key unique (identifier),
  constraint tasks_identifier_check check (length(identifier) <= 128)
);

-- job_queue_id and task_id deliberately carry no foreign keys (hot path).
create table {{schema}}._private_jobs (
  id bigint constraint jobs_id_not_null1 not null
    generated always as identity (sequence name {{schema}}.jobs_id_seq1),
  job_queue_id int,
  task_id int constraint jobs_task_id_not_null not null,
  payload json constraint jobs_payload_not_null1 not null default '{}'::json,
  priority smallint constraint jobs_priority_not_null1 not null default 0,
  run_at timestamptz constraint jobs_run_at_not_null1 not null default now(),
  attempts smallint constraint jobs_attempts_not_null1 not null default 0,
  max_attempts smallint constraint jobs_max_attempts_not_null1 not null
    default 25,
  last_error text,
  created_at timestamptz constraint jobs_created_at_not_null1 not null
    default now(),
  updated_at timestamptz constraint jobs_updated_at_not_null1 not null
    default now(),
  key text,
  locked_at timestamptz,
  locked_by text,
  revision int constraint jobs_revision_not_null1 not null default 0,
  flags jsonb,
  is_available boolean constraint jobs_is_available_not_null not null
    generated always as (((locked_at is null) and (attempts < max_attempts))) stored,
  constraint jobs_pkey1 primary key (id),
  constraint jobs_key_key1 unique (key),
  constraint jobs_key_check check ((length(key) > 0) and (length(key) <= 512)),
  constraint jobs_max_attempts_check check (max_attempts >= 1)
);

create table {{schema}}._private_known_crontabs (
  identifier text constraint known_crontabs_identifier_not_null not null,
  known_since timestamptz constraint known_crontabs_known_since_not_null not null,
  last_execution timestamptz,
  constraint known_crontabs_pkey primary key (identifier)
);

-- Row level security is switched on with no policies: only the owner (and
-- superusers) can touch the private tables directly.
alter table {{schema}}._private_job_queues enable row level security;
alter table {{schema}}._private_tasks enable row level security;
alter table {{schema}}._private_jobs enable row level security;
alter table {{schema}}._private_known_crontabs enable row level security;

-- Partial covering indexes used when picking the next runnable job.
create index jobs_main_index on {{schema}}._private_jobs
  using btree (priority, run_at)
  include (id, task_id, job_queue_id)
  where (is_available = true);

create index jobs_no_queue_index on {{schema}}._private_jobs
  using btree (priority, run_at)
  include (id, task_id)
  where ((is_available = true) and (job_queue_id is null));


-- ---------------------------------------------------------------------------
-- Types and views
-- ---------------------------------------------------------------------------

-- One element of the batch passed to add_jobs().
create type {{schema}}.job_spec as (
  identifier text,
  payload json,
  queue_name text,
  run_at timestamptz,
  max_attempts smallint,
  job_key text,
  priority smallint,
  flags text[]
);

-- Read-only public view over the private job table (payload is not exposed).
-- The aliases and join conditions are part of the stored view definition, so
-- they are written exactly as the reference catalog has them.
create view {{schema}}.jobs as
select
  jobs.id,
  job_queues.queue_name,
  tasks.identifier as task_identifier,
  jobs.priority,
  jobs.run_at,
  jobs.attempts,
  jobs.max_attempts,
  jobs.last_error,
  jobs.created_at,
  jobs.updated_at,
  jobs.key,
  jobs.locked_at,
  jobs.locked_by,
  jobs.revision,
  jobs.flags
from {{schema}}._private_jobs as jobs
join {{schema}}._private_tasks as tasks
  on (tasks.id = jobs.task_id)
left join {{schema}}._private_job_queues as job_queues
  on (job_queues.id = jobs.job_queue_id);


-- ---------------------------------------------------------------------------
-- Functions
-- ---------------------------------------------------------------------------

-- add_jobs: insert (or, for an existing unlocked job with the same key,
-- replace) a batch of jobs. Returns the inserted/updated rows.
create function {{schema}}.add_jobs(
  specs {{schema}}.job_spec[],
  job_key_preserve_run_at boolean default false
)
returns setof {{schema}}._private_jobs
language plpgsql
as $$
begin
  -- Register task identifiers and queue names used by the batch.
  insert into {{schema}}._private_tasks as t (identifier)
  select distinct s.identifier
  from unnest(specs) as s
  on conflict do nothing;

  insert into {{schema}}._private_job_queues as q (queue_name)
  select distinct s.queue_name
  from unnest(specs) as s
  where s.queue_name is not null
  on conflict do nothing;

  -- A job holding one of the requested keys that is not available (it is
  -- running right now, or it has used up its attempts) cannot be replaced:
  -- it gives up its key and is retired, and a fresh job takes the key below.
  update {{schema}}._private_jobs as j
  set key = null,
      attempts = j.max_attempts,
      updated_at = now()
  from unnest(specs) as s
  where s.job_key is not null
    and j.key = s.job_key
    and j.is_available is not true;

  -- Wake listening workers. The count is the batch size, so it can be larger
  -- than the number of rows actually created. (An empty batch yields a null
  -- payload, i.e. an empty notification.)
  perform pg_notify(
    'jobs:insert',
    '{"r":' || random()::text
      || ',"count":' || array_length(specs, 1)::text || '}'
  );

  return query
  insert into {{schema}}._private_jobs as jobs (
    job_queue_id, task_id, payload, run_at, max_attempts, key, priority, flags
  )
  select
    q.id,
    t.id,
    coalesce(s.payload, '{}'::json),
    coalesce(s.run_at, now()),
    coalesce(s.max_attempts, 25),
    s.job_key,
    coalesce(s.priority, 0),
    (select jsonb_object_agg(f.flag, true) from unnest(s.flags) as f(flag))
  from unnest(specs) as s
  inner join {{schema}}._private_tasks as t
    on t.identifier = s.identifier
  left join {{schema}}._private_job_queues as q
    on q.queue_name = s.queue_name
  on conflict (key) do update
  set job_queue_id = excluded.job_queue_id,
      task_id = excluded.task_id,
      -- two JSON arrays are merged (batch jobs); anything else is replaced
      payload = case
        when json_typeof(jobs.payload) = 'array'
          and json_typeof(excluded.payload) = 'array'
        then (jobs.payload::jsonb || excluded.payload::jsonb)::json
        else excluded.payload
      end,
      max_attempts = excluded.max_attempts,
      run_at = case
        when job_key_preserve_run_at is true and jobs.attempts = 0
        then jobs.run_at
        else excluded.run_at
      end,
      priority = excluded.priority,
      revision = jobs.revision + 1,
      flags = excluded.flags,
      attempts = 0,
      last_error = null,
      updated_at = now()
  where jobs.locked_at is null
  returning *;
end;
$$;

-- add_job: single-job wrapper. job_key_mode is 'replace' (default),
-- 'preserve_run_at' (replace but keep run_at of a not-yet-attempted job) or
-- 'unsafe_dedupe' (keep whatever job already holds the key, even a running
-- one, only bumping its revision). A null key or null mode behaves as
-- 'replace'; any other mode with a key raises SQLSTATE GWBKM.
create function {{schema}}.add_job(
  identifier text,
  payload json default null::json,
  queue_name text default null::text,
  run_at timestamptz default null::timestamptz,
  max_attempts int default null::int,
  job_key text default null::text,
  priority int default null::int,
  flags text[] default null::text[],
  job_key_mode text default 'replace'::text
)
returns {{schema}}._private_jobs
language plpgsql
as $$
declare
  result_row {{schema}}._private_jobs;
begin
  if add_job.job_key is not null and add_job.job_key_mode = 'unsafe_dedupe' then
    insert into {{schema}}._private_tasks as t (identifier)
    values (add_job.identifier)
    on conflict do nothing;

    if add_job.queue_name is not null then
      insert into {{schema}}._private_job_queues as q (queue_name)
      values (add_job.queue_name)
      on conflict do nothing;
    end if;

    -- On a key clash the existing job wins, whatever its state; it only gets
    -- its revision/updated_at bumped so that a row is returned.
    insert into {{schema}}._private_jobs as jobs (
      job_queue_id, task_id, payload, run_at, max_attempts, key, priority,
      flags
    )
    select
      q.id,
      t.id,
      coalesce(add_job.payload, '{}'::json),
      coalesce(add_job.run_at, now()),
      coalesce(add_job.max_attempts::smallint, 25::smallint),
      add_job.job_key,
      coalesce(add_job.priority::smallint, 0::smallint),
      (
        select jsonb_object_agg(f.flag, true)
        from unnest(add_job.flags) as f(flag)
      )
    from {{schema}}._private_tasks as t
    left join {{schema}}._private_job_queues as q
      on q.queue_name = add_job.queue_name
    where t.identifier = add_job.identifier
    on conflict (key) do update
    set revision = jobs.revision + 1,
        updated_at = now()
    returning * into result_row;

    -- Only a genuinely new job needs to wake the workers.
    if result_row.revision = 0 then
      perform pg_notify(
        'jobs:insert', '{"r":' || random()::text || ',"count":1}'
      );
    end if;
    return result_row;
  end if;

  if add_job.job_key is not null
    and add_job.job_key_mode is not null
    and add_job.job_key_mode not in ('replace', 'preserve_run_at')
  then
    raise exception
      'unsupported job_key_mode %; use replace, preserve_run_at or unsafe_dedupe',
      quote_literal(add_job.job_key_mode)
      using errcode = 'GWBKM';
  end if;

  select * into result_row
  from {{schema}}.add_jobs(
    array[
      row(
        add_job.identifier,
        add_job.payload,
        add_job.queue_name,
        add_job.run_at,
        add_job.max_attempts::smallint,
        add_job.job_key,
        add_job.priority::smallint,
        add_job.flags
      )::{{schema}}.job_spec
    ],
    add_job.job_key_mode = 'preserve_run_at'
  )
  limit 1;
  return result_row;
end;
$$;

-- remove_job: delete the job holding job_key unless a live worker holds its
-- lock (locks older than 4 hours count as abandoned). A job that cannot be
-- deleted loses its key and is retired instead, so it never runs again.
create function {{schema}}.remove_job(job_key text)
returns {{schema}}._private_jobs
language plpgsql
strict
as $$
declare
  result_row {{schema}}._private_jobs;
begin
  delete from {{schema}}._private_jobs as j
  where j.key = remove_job.job_key
    and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning * into result_row;

  if found then
    perform pg_notify(
      'jobs:insert', '{"r":' || random()::text || ',"count":-1}'
    );
    return result_row;
  end if;

  update {{schema}}._private_jobs as j
  set key = null,
      attempts = j.max_attempts,
      updated_at = now()
  where j.key = remove_job.job_key
  returning * into result_row;
  return result_row;
end;
$$;

-- complete_jobs: delete the given jobs, skipping any that a live worker holds.
create function {{schema}}.complete_jobs(job_ids bigint[])
returns setof {{schema}}._private_jobs
language sql
as $$
  delete from {{schema}}._private_jobs as j
  where j.id = any (complete_jobs.job_ids)
    and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$$;

-- permanently_fail_jobs: exhaust the attempts of the given jobs (skipping any
-- a live worker holds) and record why.
create function {{schema}}.permanently_fail_jobs(
  job_ids bigint[],
  error_message text default null::text
)
returns setof {{schema}}._private_jobs
language sql
as $$
  update {{schema}}._private_jobs as j
  set last_error = coalesce(
        permanently_fail_jobs.error_message,
        'Manually marked as failed'
      ),
      attempts = j.max_attempts,
      updated_at = now()
  where j.id = any (permanently_fail_jobs.job_ids)
    and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$$;

-- reschedule_jobs: change the schedule/priority/attempt counters of the given
-- jobs (null leaves a field unchanged), skipping any a live worker holds.
create function {{schema}}.reschedule_jobs(
  job_ids bigint[],
  run_at timestamptz default null::timestamptz,
  priority int default null::int,
  attempts int default null::int,
  max_attempts int default null::int
)
returns setof {{schema}}._private_jobs
language sql
as $$
  update {{schema}}._private_jobs as j
  set run_at = coalesce(reschedule_jobs.run_at, j.run_at),
      priority = coalesce(reschedule_jobs.priority::smallint, j.priority),
      attempts = coalesce(reschedule_jobs.attempts::smallint, j.attempts),
      max_attempts = coalesce(
        reschedule_jobs.max_attempts::smallint, j.max_attempts
      ),
      updated_at = now()
  where j.id = any (reschedule_jobs.job_ids)
    and (j.locked_at is null or j.locked_at < now() - interval '4 hours')
  returning *;
$$;

-- force_unlock_workers: release every job and queue lock held by the given
-- (presumed dead) workers.
create function {{schema}}.force_unlock_workers(worker_ids text[])
returns void
language sql
as $$
  update {{schema}}._private_jobs as j
  set locked_at = null, locked_by = null
  where j.locked_by = any (force_unlock_workers.worker_ids);

  update {{schema}}._private_job_queues as q
  set locked_at = null, locked_by = null
  where q.locked_by = any (force_unlock_workers.worker_ids);
$$;
