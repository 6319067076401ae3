-- A directory name without '_', as a real project has: diesel's version is the whole name without dashes.
CREATE INDEX CONCURRENTLY invoices_due_on ON invoices (due_on);
