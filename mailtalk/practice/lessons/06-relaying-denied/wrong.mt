# Lesson 6 not done: refused by the stranger, and then the same mistake again.
connect smtp://${MAIL_STRANGER_TEST_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 5xx
C: QUIT
S: 221
