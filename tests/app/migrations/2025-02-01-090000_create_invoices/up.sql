-- Invoices point at the shared plans table on purpose (it lives in the shared schema).
-- migrate-tenants: allow(public-reference)
CREATE TABLE invoices (
    id BIGSERIAL PRIMARY KEY,
    plan TEXT NOT NULL REFERENCES public.app_plans (name),
    amount_cents BIGINT NOT NULL,
    due_on DATE NOT NULL
);
