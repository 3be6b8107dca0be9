# Lesson 13: refused for now, room made by the administrator (the two rules out of
# control/faults: the server reads the file again at the next connection), let in.
set -e
SMTP_EXPECT=452 POP3_EXPECT="-ERR *SYS/TEMP*" mailtalk run "$LESSON/try.mt"
: > "$MX_EXAMPLE_NET_ROOT/control/faults"
SMTP_EXPECT=250 POP3_EXPECT=+OK mailtalk run "$LESSON/try.mt"
