# Lesson 13 not done: refused, and retried at once without making room.
set -e
SMTP_EXPECT=452 POP3_EXPECT="-ERR *SYS/TEMP*" mailtalk run "$LESSON/try.mt"
SMTP_EXPECT=452 POP3_EXPECT="-ERR *SYS/TEMP*" mailtalk run "$LESSON/try.mt"
