"""Text: a chat model's reply made sayable on a phone, and the admin's knowledge file (its
facts, its questions and answers)."""
