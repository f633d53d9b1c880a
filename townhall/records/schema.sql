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
    owner            text,
    conversation_id  text,
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
    owner      text,
    conversation_id text,
    topic      text        not null,
    summary    text        not null,
    sentiment  text        not null check (sentiment in ('positive', 'neutral', 'negative')),
    location   text,
    name       text
);

-- Migration for tables made before records had owners: every row is kept, and old rows get NULL
-- (owner unknown: only the admin key sees them).
alter table incidents add column if not exists owner text;
alter table incidents add column if not exists conversation_id text;
alter table feedback add column if not exists owner text;
alter table feedback add column if not exists conversation_id text;

create index if not exists incidents_session_idx on incidents (session_id);
create index if not exists incidents_created_idx on incidents (created_at desc);
create index if not exists incidents_status_idx on incidents (status);
create index if not exists feedback_session_idx on feedback (session_id);
create index if not exists feedback_created_idx on feedback (created_at desc);
create index if not exists incidents_owner_idx on incidents (owner, conversation_id);
create index if not exists feedback_owner_idx on feedback (owner, conversation_id);

-- Row level security. The service role (SUPABASE_SERVICE_KEY) bypasses it, and so does this
-- server's own connection (DATABASE_URL: the tables' owner); it is what the server files and
-- reads through. Residents' reports hold names, phone numbers and addresses, so every other role
-- is refused outright: the restrictive policies below deny the anon and authenticated roles
-- (Supabase's roles for a browser holding the anon key) whatever permissive policy is added
-- later. On a plain PostgreSQL without those roles only RLS itself is enabled.
alter table incidents enable row level security;
alter table feedback enable row level security;

do $$
declare
    t text;
    r text;
begin
    foreach t in array array['incidents', 'feedback'] loop
        foreach r in array array['anon', 'authenticated'] loop
            if exists (select 1 from pg_roles where rolname = r)
               and not exists (
                   select 1 from pg_policies
                   where schemaname = current_schema() and tablename = t
                     and policyname = 'townhall_deny_' || r
               ) then
                execute format(
                    'create policy %I on %I as restrictive for all to %I using (false) '
                    'with check (false)',
                    'townhall_deny_' || r, t, r
                );
            end if;
        end loop;
    end loop;
end
$$;
