# Lesson 11 not done: only the wrong password; never a second session.
set -e
PASSWORD_TRIED=wrong EXPECT="-ERR *AUTH*" mailtalk run "$LESSON/login.mt"
PASSWORD_TRIED=builder EXPECT="+OK" mailtalk run "$LESSON/login.mt"
