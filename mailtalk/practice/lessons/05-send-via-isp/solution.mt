# Lesson 5: submission with STARTTLS and AUTH (password from $MAILTALK_PASSWORD).
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
Subject: through my provider

Hi Bob.
END
S: 250
C: QUIT
S: 221
