ALTER TABLE users DROP COLUMN last_login_at;
-- PostgreSQL cannot drop a value from an enum: rebuild the type without 'guest'
-- (a user with role 'guest' makes this fail, as it should: decide what they become first).
ALTER TYPE user_role RENAME TO user_role_with_guest;
CREATE TYPE user_role AS ENUM ('owner', 'admin', 'member');
ALTER TABLE users ALTER COLUMN role DROP DEFAULT;
ALTER TABLE users ALTER COLUMN role TYPE user_role USING role::text::user_role;
ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member';
DROP TYPE user_role_with_guest;
