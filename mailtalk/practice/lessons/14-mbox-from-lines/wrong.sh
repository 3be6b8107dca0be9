# Lesson 14 not done: the refusal met, and met again: retrying does not repair a spool.
set -e
mailtalk run "$LESSON/refused.mt"
mailtalk run "$LESSON/refused.mt"
