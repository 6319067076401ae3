ALTER TABLE invoices DROP COLUMN paid_at;
