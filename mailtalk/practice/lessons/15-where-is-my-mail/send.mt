# Lesson 15: Alice to bob@friends.test through her provider (TLS, then AUTH).
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
C: RCPT TO:<bob@friends.test>
S: 250
data <<END
Subject: did you get this?

Hi Bob.
END
S: 250
C: QUIT
S: 221
