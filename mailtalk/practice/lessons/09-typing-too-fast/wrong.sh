# Lesson 9 not done: every session waits for the greeting, so the server never sees
# an early talker (and no 554 is ever answered).
set -e
mailtalk run "$LESSON/wait.mt"
mailtalk run "$LESSON/wait.mt"
