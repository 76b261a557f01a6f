-- Migration 20: add_jobs() and add_job() stop consuming identity values for
-- task identifiers and queue names that already exist. Behaviour is otherwise
-- unchanged; signatures are identical, so the functions are replaced in place.

-- add_jobs: insert (or, for an existing unlocked job with the same key,
-- replace) a batch of jobs. Returns the inserted/updated rows.
create or replace function {{schema}}.add_jobs(
  specs {{schema}}.job_spec[],
  job_key_preserve_run_at boolean default false
)
returns setof {{schema}}._private_jobs
language plpgsql
as $$
begin
  -- Register task identifiers and queue names used by the batch.
  -- Only names that are not there yet are inserted: an insert that ends in
  -- "on conflict do nothing" still draws a value from the identity sequence,
  -- and doing that on every call would burn through the int4 ids. The
  -- conflict clause stays to cover a concurrent insert of the same name.
  insert into {{schema}}._private_tasks as t (identifier)
  select distinct s.identifier
  from unnest(specs) as s
  where not exists (
    select 1
    from {{schema}}._private_tasks as known
    where known.identifier = s.identifier
  )
  on conflict do nothing;

  insert into {{schema}}._private_job_queues as q (queue_name)
  select distinct s.queue_name
  from unnest(specs) as s
  where s.queue_name is not null
    and not exists (
      select 1
      from {{schema}}._private_job_queues as known
      where known.queue_name = s.queue_name
    )
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
create or replace function {{schema}}.add_job(
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
    -- As in add_jobs: skip names that already exist so that no identity
    -- value is consumed for them.
    insert into {{schema}}._private_tasks as t (identifier)
    select add_job.identifier
    where not exists (
      select 1
      from {{schema}}._private_tasks as known
      where known.identifier = add_job.identifier
    )
    on conflict do nothing;

    if add_job.queue_name is not null then
      insert into {{schema}}._private_job_queues as q (queue_name)
      select add_job.queue_name
      where not exists (
        select 1
        from {{schema}}._private_job_queues as known
        where known.queue_name = add_job.queue_name
      )
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
