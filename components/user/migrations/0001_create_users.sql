-- The user service's only table. The host applies this file once, before the
-- component serves, inside the schema it provisioned for the component.
CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- E-mails are unique without regard to case, as lower() folds it; the
-- service maps this index's unique violation (23505) to 409 conflict.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
