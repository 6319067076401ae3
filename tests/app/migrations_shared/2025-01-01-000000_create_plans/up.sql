CREATE TABLE app_plans (name TEXT PRIMARY KEY);
INSERT INTO app_plans VALUES ('free'), ('pro');
