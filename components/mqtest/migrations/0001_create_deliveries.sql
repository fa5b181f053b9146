-- The messaging test guest's record: one row per call of its handler, written
-- when the call starts, so the tests can see every attempt and when it ran.
CREATE TABLE deliveries (
    id             bigserial   PRIMARY KEY,
    message_id     text,
    routing_key    text,
    queue          text,
    attempt        int,
    redelivered    bool,
    -- The body as UTF-8 text (invalid sequences replaced).
    body           text,
    content_type   text,
    correlation_id text,
    -- The application headers, {"name": "value"}.
    headers        jsonb,
    at             timestamptz DEFAULT now()
);
