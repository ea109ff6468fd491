-- A message carries a batch of events (messages.py); a dead letter is one event of it,
-- named by its position in the message (0 for a message of one event, or one that
-- could not be read at all).
ALTER TABLE dead_letters ADD COLUMN position integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
ALTER TABLE dead_letters ADD PRIMARY KEY (stream, stream_seq, position);
