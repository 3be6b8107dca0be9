# Lesson 7 as an administrator would do it in a terminal: edit the control files
# (the servers read them again at the next connection) between sessions.
set -e
EXPECT=5.7.1 mailtalk run "$LESSON/refused.mt"
echo example.org >> "$MX_EXAMPLE_NET_ROOT/control/rcpthosts"
EXPECT=5.1.1 mailtalk run "$LESSON/refused.mt"
echo example.org:bob >> "$MX_EXAMPLE_NET_ROOT/control/virtualdomains"
mailtalk run "$LESSON/deliver.mt"
echo 127.0.0.1 >> "$MAIL_STRANGER_TEST_ROOT/control/relayclients"
EXPECT=250 mailtalk run "$LESSON/relay.mt"
