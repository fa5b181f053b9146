-- The payment service's only table. The host applies this file once, before
-- the component serves, inside the schema it provisioned for the component.
CREATE TABLE payments (
    id         bigserial   PRIMARY KEY,
    -- Exactly one payment per order: a redelivered `order.created` finds the
    -- payment made the first time (INSERT ... ON CONFLICT DO NOTHING).
    order_id   bigint      NOT NULL UNIQUE,
    amount     bigint      NOT NULL,
    status     text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    -- Why a payment failed, e.g. `limit_exceeded`; null when it succeeded.
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'failed') = (reason IS NOT NULL))
);
