-- The order service's tables. The host applies this file once, before the
-- component serves, inside the schema it provisioned for the component. It
-- has already created `_trellis_outbox` there (`outbox = true`): an order and
-- its `order.created` event are written in one statement, and the host relays
-- the event to the broker after the commit.
CREATE TABLE orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL CHECK (user_id >= 1),
    product_name text        NOT NULL,
    amount       bigint      NOT NULL CHECK (amount BETWEEN 1 AND 100000000),
    -- pending -> paid | cancelled; the last two are final.
    status       text        NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'paid', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- GET /orders?user_id=N and GET /users/{id}/orders, ordered by id.
CREATE INDEX orders_user_id_id_idx ON orders (user_id, id);

-- The first 201 of each Idempotency-Key. A request claims its key by
-- inserting the row (concurrent repeats wait on the primary key until it
-- commits or rolls back) and fills in the answer in the same transaction, so
-- a committed row always has it; only 201s are ever committed.
CREATE TABLE idempotency_keys (
    key           text        PRIMARY KEY,
    -- hex SHA-256 of the request body's canonical JSON.
    request_hash  text        NOT NULL,
    order_id      bigint      REFERENCES orders (id),
    -- The 201's body byte for byte, and its Location.
    response_body text,
    location      text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Keys are kept for at least 24 hours; this index serves a purge by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- Message ids of the payment events already applied, recorded in the same
-- statement as their effect: a redelivered event changes nothing.
CREATE TABLE processed_messages (
    message_id   text        PRIMARY KEY,
    routing_key  text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
