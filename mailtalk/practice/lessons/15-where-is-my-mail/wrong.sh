# Lesson 15 not done: sent twice and nothing fixed; it bounces twice.
set -e
mailtalk run "$LESSON/send.mt"
sleep 3
mailtalk run "$LESSON/send.mt"
