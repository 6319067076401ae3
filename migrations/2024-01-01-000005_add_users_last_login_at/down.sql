ALTER TABLE users DROP COLUMN last_login_at;
-- PostgreSQL cannot drop a value from an enum; 'guest' stays (harmless).
