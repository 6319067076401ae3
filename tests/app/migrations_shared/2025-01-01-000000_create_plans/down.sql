DROP TABLE app_plans;
