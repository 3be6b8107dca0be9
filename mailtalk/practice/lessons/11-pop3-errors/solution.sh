# Lesson 11 with two terminals: the first session (in the background here) logs in
# and holds the mailbox for a few seconds; the second is refused, then let in.
set -e
PASSWORD_TRIED=wrong EXPECT="-ERR *AUTH*" mailtalk run "$LESSON/login.mt"
(printf 'USER bob\nPASS builder\n'; sleep 3; printf 'QUIT\n') \
    | mailtalk pop3 "$MX_EXAMPLE_NET_POP3" > /dev/null &
holder=$!
sleep 1
PASSWORD_TRIED=builder EXPECT="-ERR *IN-USE*" mailtalk run "$LESSON/login.mt"
wait "$holder"
PASSWORD_TRIED=builder EXPECT="+OK" mailtalk run "$LESSON/login.mt"
