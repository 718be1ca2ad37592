-- voiceassist schema (revision 0006) for sqlite.
-- Written by `python -m voiceassist.storage.schema`; tests/test_storage.py keeps it equal to the
-- models. Later changes arrive as migrations: `voiceassist db upgrade`.

CREATE TABLE voiceassist_alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT voiceassist_alembic_version_pkc PRIMARY KEY (version_num)
);

CREATE TABLE voiceassist_calls (
	id INTEGER NOT NULL,
	uniqueid VARCHAR(64) NOT NULL,
	linkedid VARCHAR(64),
	channel VARCHAR(255),
	caller_number VARCHAR(255),
	caller_name VARCHAR(255),
	extension VARCHAR(80),
	started_at DATETIME NOT NULL,
	ended_at DATETIME,
	end_state VARCHAR(20),
	summary TEXT,
	PRIMARY KEY (id),
	UNIQUE (uniqueid)
);

CREATE INDEX ix_voiceassist_calls_caller_number ON voiceassist_calls (caller_number);

CREATE INDEX ix_voiceassist_calls_linkedid ON voiceassist_calls (linkedid);

CREATE INDEX ix_voiceassist_calls_started_at ON voiceassist_calls (started_at);

CREATE TABLE voiceassist_turns (
	id INTEGER NOT NULL,
	call_id INTEGER NOT NULL,
	turn_number INTEGER NOT NULL,
	status VARCHAR(20) NOT NULL,
	error TEXT,
	transcript TEXT,
	stt_confidence FLOAT,
	reply TEXT,
	recording_path VARCHAR(1024),
	answer_path VARCHAR(1024),
	stt_provider VARCHAR(40),
	llm_provider VARCHAR(40),
	tts_provider VARCHAR(40),
	interrupted BOOLEAN DEFAULT 0 NOT NULL,
	heard_reply TEXT,
	action VARCHAR(20),
	action_target VARCHAR(255),
	speaker VARCHAR(20),
	language VARCHAR(40),
	recording_ms INTEGER,
	stt_ms INTEGER,
	llm_ms INTEGER,
	llm_first_ms INTEGER,
	tts_ms INTEGER,
	convert_ms INTEGER,
	first_audio_ms INTEGER,
	speech_to_audio_ms INTEGER,
	played_ms INTEGER,
	total_ms INTEGER,
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	PRIMARY KEY (id),
	CONSTRAINT voiceassist_turns_call_turn UNIQUE (call_id, turn_number),
	FOREIGN KEY(call_id) REFERENCES voiceassist_calls (id) ON DELETE CASCADE
);

INSERT INTO voiceassist_alembic_version (version_num) VALUES ('0006');
