# Lesson 5 not done: no STARTTLS, so the provider offers no AUTH and relays nothing.
connect smtp://${MAIL_ISP_TEST_SUBMISSION}
S: 220
C: EHLO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: *
C: QUIT
S: 221
