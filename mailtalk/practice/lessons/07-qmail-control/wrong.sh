# Lesson 7 not done: the refusal seen, but no control file changed.
set -e
EXPECT=5xx mailtalk run "$LESSON/refused.mt"
EXPECT=5xx mailtalk run "$LESSON/relay.mt"
