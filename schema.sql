-- Digital Town Hall records, for PostgreSQL and Supabase.
-- Applied automatically at start-up when DATABASE_URL points at PostgreSQL; for the Supabase API
-- path, run it once in the Supabase SQL editor (or: psql "$SUPABASE_DB_URL" -f schema.sql).
-- Idempotent: safe to run again.

create table if not exists incidents (
    reference        text primary key,
    session_id       text        not null,
    dedupe_key       text        not null unique,
    created_at       timestamptz not null default now(),
    status           text        not null default 'received',
    category         text        not null,
    description      text        not null,
    location         text        not null,
    severity         smallint    not null check (severity between 1 and 5),
    occurred_at      text,
    people_involved  text,
    reporter_name    text,
    reporter_contact text
);

create table if not exists feedback (
    reference  text primary key,
    session_id text        not null,
    dedupe_key text        not null unique,
    created_at timestamptz not null default now(),
    status     text        not null default 'received',
    topic      text        not null,
    summary    text        not null,
    sentiment  text        not null check (sentiment in ('positive', 'neutral', 'negative')),
    location   text,
    name       text
);

create index if not exists incidents_session_idx on incidents (session_id);
create index if not exists incidents_created_idx on incidents (created_at desc);
create index if not exists incidents_status_idx on incidents (status);
create index if not exists feedback_session_idx on feedback (session_id);
create index if not exists feedback_created_idx on feedback (created_at desc);

-- Row level security on, and no policies: the anon and authenticated roles can neither read nor
-- write. Only the service role (SUPABASE_SERVICE_KEY, which bypasses RLS) or a direct database
-- connection reaches these tables.
alter table incidents enable row level security;
alter table feedback enable row level security;
