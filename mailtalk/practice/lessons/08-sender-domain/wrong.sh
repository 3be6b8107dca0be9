# Lesson 8 not done: refused, and no record added.
set -e
EXPECT=5xx mailtalk run "$LESSON/mail-from.mt"
EXPECT=5xx mailtalk run "$LESSON/mail-from.mt"
