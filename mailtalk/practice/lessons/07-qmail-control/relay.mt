# Lesson 7: relaying through mail.stranger.test, which relayclients now allows.
connect smtp://${MAIL_STRANGER_TEST_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: ${EXPECT}
C: QUIT
S: 221
