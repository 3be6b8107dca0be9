# Lesson 6: refused by the stranger, then sent through the provider.
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
connect smtp://${MAIL_ISP_TEST_SUBMISSION} cafile=${CA}
S: 220
C: EHLO learner.test
S: 250
starttls
C: EHLO learner.test
S: 250
auth plain alice
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
data <<END
Subject: the right way

Hi Bob.
END
S: 250
C: QUIT
S: 221
