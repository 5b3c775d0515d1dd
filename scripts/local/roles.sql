-- The database roles of least privilege (README "Database roles"), for an admin to run:
--   CL_PG_OWNER_PASSWORD=... CL_PG_SCORER_PASSWORD=... CL_PG_API_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 -v db=community_levels -d community_levels -f roles.sql
-- scripts/local/postgres.sh and docker-compose.yml run it on every start: it is idempotent,
-- and running it again sets new passwords. What each role may do to the tables is granted by
-- the migrations (0002), which run as cl_owner.
\getenv owner_password CL_PG_OWNER_PASSWORD
\getenv scorer_password CL_PG_SCORER_PASSWORD
\getenv api_password CL_PG_API_PASSWORD

SELECT format('CREATE ROLE %I', name) FROM unnest(ARRAY['cl_owner', 'cl_scorer', 'cl_api']) AS name
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec

-- Logins and nothing more: none is a superuser or may create roles or databases.
ALTER ROLE cl_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
ALTER ROLE cl_scorer LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'scorer_password';
ALTER ROLE cl_api LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'api_password';

-- The owner role owns the database, so (PostgreSQL 15) also its schema public, where the
-- migrations create tables; nobody else may create anything there.
ALTER DATABASE :"db" OWNER TO cl_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Tables made by the admin before these roles existed pass to the owner, so that later
-- migrations may alter them (their identity sequences and indexes follow).
SELECT format('ALTER TABLE public.%I OWNER TO cl_owner', relname) FROM pg_class
WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND relowner <> 'cl_owner'::regrole \gexec
